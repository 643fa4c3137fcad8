"""`creditsctl`, the operator's command line (installed by the package; also `python -m services.cli`).

    __main__.py          the parser, the dispatch, exit codes
    settings.py          what it reads from the environment (LEDGER_TARGET, LEDGER_TOKEN, Stripe settings)
    ledger_commands.py   balance, history, adjust, anonymize, payment, payments: ledger RPCs only
    replay.py            replay-event: Stripe's Events API, then the gateway's translate/apply path
    reconcile.py         reconcile: one reconciler run in this process, observed by the progress bar
    postings_file.py     post: the JSON-lines file, each line checked as the ledger would, cut into batches
    post.py              post: the batches through PostBatch, one after the other, and the summary
    progress.py          the text progress bar (stderr)
    render.py            tables and the JSON document
    errors.py            why it stopped, and the exit code for each kind

Docs: docs/operations.md (the runbook uses it throughout).
"""
