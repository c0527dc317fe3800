"""failberry.hostguard"""
