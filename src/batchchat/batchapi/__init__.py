"""Batch mode: a job's requests sent through a provider's Batch API, tracked and collected.

The second executor, beside :mod:`batchchat.execute`: it turns the planner's requests into
the same results the online executor makes, through ``/v1/files`` and ``/v1/batches``::

    shards      requests → shard input files on disk (by model, lines, bytes, tokens)
    state       every shard and its batch, saved before each Batch API call
    client      the Batch API over the transport seam: upload, create, poll, download
    lines       output and error file lines → results, joined by custom_id
    collect     an ended batch → results in the sink; what to send again → a new shard
    waves       which shard may be created now (enqueued tokens, backoff, budget)
    executor    the loop: submit, poll, collect, resubmit; once (--no-wait) or to the end
    importer    result files made elsewhere (OpenAI, vLLM run-batch) → results
"""
