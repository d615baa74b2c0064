"""The embedded executor of sensor specs: `LocalSensor` applies the same filters, parameter mapping and
admission rules that `ctloop.sensors.manifests` renders for Argo Events, over a ctloop bus.

Public: `LocalSensor`, `DecisionLog`, and the local event sources (`s3_poller`, `webhook`).
"""
