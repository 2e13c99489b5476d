"""The placement policy: the policy file (schema), node roles and process selection (roles), the per-tick plan
(decide) and the gates of kernel-executed engines (gates). Pure; imports no engine, service or report module.
"""
