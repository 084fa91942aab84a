"""One router per resource of the dashboard API."""
