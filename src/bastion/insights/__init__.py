"""Insights: download counts, critical projects (the 2FA mandate's scope), the 2FA dashboard."""
