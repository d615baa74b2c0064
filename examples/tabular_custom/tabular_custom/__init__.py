"""A user project: its own torch network and loss on a tabular set, returned as an MLflow PythonModel."""
