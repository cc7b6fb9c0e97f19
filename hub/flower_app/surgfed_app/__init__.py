"""Flower app of the platform: the thin ServerApp and ClientApp (the only modules importing Flower)."""
