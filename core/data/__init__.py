"""Loading and validating images, cases and studies (imports nothing above it)."""
