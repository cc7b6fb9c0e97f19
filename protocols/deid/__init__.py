"""De-identification profiles as data: the Annex E basic profile and recorder overlay rules."""
