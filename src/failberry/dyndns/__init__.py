"""failberry.dyndns"""
