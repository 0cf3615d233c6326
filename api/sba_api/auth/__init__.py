"""Bearer-token authentication, authorisation by permission, and run-scoped stream tokens.

`tokens` verifies access tokens (HS256 secret or a JWKS) into a `Principal`;
`jwks` fetches and caches signing keys; `stream` mints and checks the short-lived
tokens browsers pass as `?access_token=` to the SSE route; `middleware` ties them
to the route table.
"""
