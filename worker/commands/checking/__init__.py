"""What `verify` and `validate --online` share: retried API reads, the orphan scan,
and the online check of names.
"""
