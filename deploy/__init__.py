"""The registry side of the loop: promotion and serving.

Public: `registry.Registry`, `policy.decide`, `promotion` (`apply_decision`, `promote`, `rollback`, `settle`, `note`),
`serving.serving`/`serve` (the server as `ctloop serve` wires it), `shadow` (a second alias scored beside the
champion, logged with role "shadow"), and `bake.RegistryBakes` (the bake window's registry side).
"""
