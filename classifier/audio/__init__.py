"""Audio stages: decode any file to mono float32, cut it into windows, turn windows into log-mel patches."""
