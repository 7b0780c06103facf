"""The job page for people: views and the submit form (templates in the top-level templates/)."""
