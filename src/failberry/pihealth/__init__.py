"""The Pi's own health: under-voltage, temperature and SD card errors."""
