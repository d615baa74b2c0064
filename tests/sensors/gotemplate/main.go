// Command gotemplate resolves Argo Events trigger parameters the way the sensor does (argo-events
// pkg/sensors/triggers/params.go): a dataTemplate runs text/template with sprig's FuncMap on
// {"Input": gjson.ParseBytes(data).Value()} and fails on "" or "<no value>"; a dataKey is a gjson path
// whose value is res.String(), or the raw JSON for objects, arrays and null.
//
// A case with "filters" (the Sensor's dependency filters) instead evaluates them as the sensor's
// filterData/filterExpr do (AND of all; gjson paths; govaluate expressions): ok is whether the event passes.
//
// It reads one case per line from stdin, {"template": ..., "key": ..., "filters": ..., "data": "<event data as
// JSON text>"}, and writes one line per case, {"ok": bool, "value": ..., "error": ...}, so one process serves
// many cases.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"text/template"

	"github.com/Knetic/govaluate"
	"github.com/Masterminds/sprig/v3"
	"github.com/tidwall/gjson"
)

type dataFilter struct {
	Path       string   `json:"path"`
	Type       string   `json:"type"`
	Value      []string `json:"value"`
	Comparator string   `json:"comparator"`
}

type exprFilter struct {
	Expr   string `json:"expr"`
	Fields []struct {
		Name string `json:"name"`
		Path string `json:"path"`
	} `json:"fields"`
}

type filters struct {
	Data  []dataFilter `json:"data"`
	Exprs []exprFilter `json:"exprs"`
}

type job struct {
	Template string   `json:"template"`
	Key      string   `json:"key"`
	Filters  *filters `json:"filters"`
	Data     string   `json:"data"`
}

type result struct {
	OK    bool   `json:"ok"`
	Value string `json:"value"`
	Error string `json:"error,omitempty"`
}

var funcs = sprig.FuncMap()

func fromTemplate(data []byte, text string) (string, error) {
	tpl, err := template.New("param").Funcs(funcs).Parse(text)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := tpl.Execute(&buf, map[string]interface{}{"Input": gjson.ParseBytes(data).Value()}); err != nil {
		return "", err
	}
	out := buf.String()
	if out == "" || out == "<no value>" {
		return "", fmt.Errorf("template evaluated to empty string or no value")
	}
	return out, nil
}

func fromKey(data []byte, key string) (string, error) {
	res := gjson.GetBytes(data, key)
	if !res.Exists() {
		return "", fmt.Errorf("key %s does not exist", key)
	}
	if res.Type == gjson.JSON || res.Type == gjson.Null {
		return res.Raw, nil
	}
	return res.String(), nil
}

func matches(f dataFilter, res gjson.Result) (bool, error) {
	for _, value := range f.Value {
		var hit bool
		switch f.Type {
		case "bool":
			want, err := strconv.ParseBool(value)
			if err != nil {
				return false, err
			}
			hit = want == res.Bool()
		case "number":
			want, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return false, err
			}
			got := res.Float()
			hit = map[string]bool{">=": got >= want, ">": got > want, "<": got < want, "<=": got <= want,
				"!=": got != want, "=": got == want, "": got == want}[f.Comparator]
		case "string":
			exp, err := regexp.Compile(value)
			if err != nil {
				return false, err
			}
			hit = exp.MatchString(res.String()) == (f.Comparator != "!=")
		default:
			return false, fmt.Errorf("unsupported JSON type %q", f.Type)
		}
		if hit {
			return true, nil
		}
	}
	return false, nil
}

func passes(fs filters, data []byte) (bool, error) {
	for _, f := range fs.Data {
		res := gjson.GetBytes(data, f.Path)
		if !res.Exists() {
			return false, fmt.Errorf("path %q does not exist", f.Path)
		}
		if ok, err := matches(f, res); !ok || err != nil {
			return false, err
		}
	}
	for _, f := range fs.Exprs {
		params := map[string]interface{}{}
		for _, field := range f.Fields {
			res := gjson.GetBytes(data, field.Path)
			if !res.Exists() {
				return false, fmt.Errorf("path %q does not exist", field.Path)
			}
			params[field.Name] = res.Value()
		}
		expr, err := govaluate.NewEvaluableExpression(f.Expr)
		if err != nil {
			return false, err
		}
		out, err := expr.Evaluate(params)
		if err != nil || out != true {
			return false, err
		}
	}
	return true, nil
}

func resolve(j job) result {
	data := []byte(j.Data)
	if !json.Valid(data) {
		return result{Error: "event data is not valid JSON"}
	}
	if j.Filters != nil {
		ok, err := passes(*j.Filters, data)
		if err != nil {
			return result{Error: err.Error()}
		}
		return result{OK: ok}
	}
	var err error
	if j.Template != "" {
		var out string
		if out, err = fromTemplate(data, j.Template); err == nil {
			return result{OK: true, Value: out}
		}
	}
	if j.Key != "" {
		var out string
		if out, err = fromKey(data, j.Key); err == nil {
			return result{OK: true, Value: out}
		}
	}
	return result{Error: fmt.Sprint(err)}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	// Unbuffered: the caller writes a case and waits for its answer.
	enc := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var j job
		if err := json.Unmarshal(in.Bytes(), &j); err != nil {
			fmt.Fprintln(os.Stderr, "bad case:", err)
			os.Exit(2)
		}
		if err := enc.Encode(resolve(j)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
