"""Child process of the storage crash test: appends numbered entries and acknowledges the oldest in
batches, reporting on stdout after each call has returned ("A n": n is durable, "K n": every entry
up to n is acknowledged). The parent SIGKILLs it at a random moment."""

import sys

from uun_gateway.storage import Storage

path, first = sys.argv[1], int(sys.argv[2])
store = Storage("crash", path)
out = sys.stdout
out.write("ready\n")
out.flush()
n = first
while True:
    store.append({"n": n, "pad": "x" * 64})
    out.write(f"A {n}\n")
    out.flush()
    if n % 7 == 0:
        batch = store.oldest(5)
        store.ack(e.id for e in batch)
        if batch:
            out.write(f"K {batch[-1].data['n']}\n")
            out.flush()
    n += 1
