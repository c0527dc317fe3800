"""Alerts: what the parts publish on the bus, told to the admin by SMS through the stick,
webhooks and hook scripts, without storms. `failberry.alerts.part` is the part."""
