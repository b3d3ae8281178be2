"""The client: the Pool and everything it needs to put work on the cluster.

::

    pool.py       Pool: the public facade (map, apply, submit, scatter, gather, ...)
    session.py    Session: the client's view of the cluster -- center link, membership,
                  occupancy, resources, keys owned and released
    options.py    Options: how tasks run (timeout, retries, chunksize, seed, resources)
    tasks.py      making tasks from a call: chunks, seeds, constants sent once
    dispatch.py   Batch: sending tasks to workers as their slots free up, retries;
                  setbacks.py: its dead, paused and unreachable workers; crowd.py:
                  which workers it keeps at work (few for tiny tasks)
    recovery.py   recomputing lost data from its recipe; putting values on workers
    handles.py    RemoteData, a value on the cluster; results.py: a map's chunks, RemoteList
    data.py       scatter, gather, delete, replicate
    streams.py    imap and friends; futures.py: as_completed, wait
    stateful.py   a user class made once per worker
    sync.py       the blocking facade's event loop; polling.py: its selector, which
                  polls a moment before it sleeps; progress.py: progress bars
"""
