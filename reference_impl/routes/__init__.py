"""HTTP routes of the reference CRM, one module per concern; each builds its handlers over
the shared ``Services``."""
