"""Use cases of the API. Handlers call these; these call the sba_store repositories
and the Kubernetes adapter. Nothing here knows about HTTP.
"""
