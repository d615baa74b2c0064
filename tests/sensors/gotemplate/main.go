package main

import (
	"bytes"
	"encoding/json"
	"os"
	"text/template"

	"github.com/Masterminds/sprig/v3"
)

type job struct {
	Template string          `json:"template"`
	Data     json.RawMessage `json:"data"`
}

func main() {
	var jobs []job
	if err := json.NewDecoder(os.Stdin).Decode(&jobs); err != nil {
		panic(err)
	}
	out := []string{}
	for _, j := range jobs {
		var data interface{}
		if err := json.Unmarshal(j.Data, &data); err != nil {
			panic(err)
		}
		tpl, err := template.New("param").Funcs(sprig.FuncMap()).Parse(j.Template)
		if err != nil {
			out = append(out, "ERROR: "+err.Error())
			continue
		}
		var buf bytes.Buffer
		if err := tpl.Execute(&buf, map[string]interface{}{"Input": data}); err != nil {
			out = append(out, "ERROR: "+err.Error())
			continue
		}
		out = append(out, buf.String())
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
