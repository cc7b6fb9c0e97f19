"""Study protocol files and templates (data)."""
