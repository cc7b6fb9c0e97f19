"""Dataset adapters: read each public label format by name and list the videos a store holds."""
