"""The fair optimizer benchmark: profiles, the search plan, the job runner, the report and its plots."""
