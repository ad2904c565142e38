"""Where audio comes from: chat text -> a Source (links), yt-dlp fetches (fetch) through an allowlist proxy (egress)."""
