"""failberry.image"""
