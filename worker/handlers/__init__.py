"""Route handlers: thin functions that decode, call the domain, and encode."""
