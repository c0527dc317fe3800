"""failberry.net"""
