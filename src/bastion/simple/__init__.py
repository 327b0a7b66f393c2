"""PEP 503/691/658/700 simple pages and the JSON API, rendered at write time and served from cache."""
