"""The Streamlit glue (the only place in core/ that imports streamlit), session helpers, jobs, audit."""
