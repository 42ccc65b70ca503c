"""Services: the logic, written against isthmus.ports."""
