"""Test fixture: a hostile app bundle."""
