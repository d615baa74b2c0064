"""The embedded executor of sensor specs: `LocalSensor` applies the same filters, parameter mapping and
admission rules that `ctloop.sensors.manifests` renders for Argo Events, over a ctloop bus, and fires the
calendar sensors' scheduled ticks itself.

Public: `assembly.local_sensor` (the sensor as `ctloop sensor run` wires it), `LocalSensor`, `DecisionLog`,
the local event sources (`s3_poller`, `webhook`, `calendar`), and `schedules.schedule_views` for display.
"""
