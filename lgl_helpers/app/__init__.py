"""The headless pipeline (papermill), its preflight (`lgl-kit doctor`), the report and the `lgl-kit` command."""
