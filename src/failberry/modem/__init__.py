"""failberry.modem"""
