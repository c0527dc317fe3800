"""Alerts: what the parts publish on the bus, told to the admin by SMS through the stick,
webhooks and hook scripts, without storms (issue 17). `failberry.alerts.part` is the part."""
