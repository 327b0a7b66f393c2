"""Projects, releases, files and roles, and the upload pipeline."""
