"""The operator's side: enrol tracks, train and calibrate heads, evaluate, export, the procedural demo library."""
