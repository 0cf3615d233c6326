"""Tool contracts: what each tool takes, returns, costs and is allowed to do."""
