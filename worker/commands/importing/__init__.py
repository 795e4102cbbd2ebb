"""What `import` is made of besides its run (worker.commands.import_ and, on a shared
ledger, shared_import): reading and recording rows, the result and exit code, the
summary, signals, progress, tenant leases, the metrics file.
"""
