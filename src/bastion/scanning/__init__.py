"""Upload scanning: archive safety, malicious-code rules, typosquat names, quarantine and review."""
