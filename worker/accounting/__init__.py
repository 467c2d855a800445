"""Usage accounting: what each request would have cost, what it did cost, and what optimization saved."""
