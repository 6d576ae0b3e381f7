"""Reading and writing local paths and s3:// URIs, and the cohort tables."""
