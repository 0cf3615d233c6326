"""Who is asking (Principal) and what each role may do (the permission table)."""
