"""A store writer for test_crash: loops over every kind of write and prints one
acknowledgement line (flushed) after each call returns. The test SIGKILLs it at random
moments and checks that every acknowledged write survived.

Usage: python crash_writer.py ROOT SHARED_THREAD_ID SEED ITERATIONS  (0 = until killed)

Acknowledgements, one a line:
    ready
    thread <thread_id>
    meta <thread_id> <value of metadata key "n">
    msg <thread_id> <message_id>
    run <thread_id> <run_id> <status>
    step <thread_id> <run_id> <step_id> <status>
    done
"""

from __future__ import annotations

import random
import sys

from stores import (
    RunError,
    RunStatus,
    RunStepStatus,
    ThreadStore,
    new_message,
    new_run,
    new_step,
    new_thread,
)

ALPHABET = "abcdéλ✓ \n"


def ack(*parts: str) -> None:
    sys.stdout.write(" ".join(parts) + "\n")
    sys.stdout.flush()


def main() -> None:
    root, shared, seed, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    store = ThreadStore(root)
    ack("ready")
    done = 0
    while iterations == 0 or done < iterations:
        done += 1
        # A long-lived thread that every writer appends to: torn tails land here. Some
        # lines are large, so that a kill can interrupt the write itself.
        size = 256_000 if rng.random() < 0.1 else rng.randint(1, 400)
        text = (ALPHABET * (size // len(ALPHABET) + 1))[rng.randrange(len(ALPHABET)) :][:size]
        shared_msg = new_message(shared, "user", text)
        store.append_message(shared, shared_msg)
        ack("msg", shared, shared_msg.id)

        thread = store.create_thread(new_thread({"seed": str(seed)}))
        ack("thread", thread.id)
        question = new_message(thread.id, "user", "hello")
        store.append_message(thread.id, question)
        ack("msg", thread.id, question.id)
        run = store.create_run(thread.id, new_run(thread.id))
        ack("run", thread.id, run.id, "queued")
        store.update_run_status(thread.id, run.id, RunStatus("in_progress"))
        ack("run", thread.id, run.id, "in_progress")
        step = store.append_step(thread.id, run.id, new_step(thread.id, run.id))
        ack("step", thread.id, run.id, step.id, "in_progress")

        choice = rng.randrange(4)
        if choice == 0:
            reply = new_message(thread.id, "assistant", "answer", run_id=run.id)
            store.complete_run(thread.id, run.id, reply)
            ack("msg", thread.id, reply.id)
            ack("step", thread.id, run.id, step.id, "completed")
            ack("run", thread.id, run.id, "completed")
        elif choice == 1:
            answer = store.cancel_run(thread.id, run.id)
            ack("run", thread.id, run.id, answer.status.value)
        elif choice == 2:
            error = RunError(code="server_error", message="simulated failure")
            store.update_step_status(thread.id, run.id, step.id, RunStepStatus("failed"), error)
            ack("step", thread.id, run.id, step.id, "failed")
            store.update_run_status(thread.id, run.id, RunStatus("failed"), error)
            ack("run", thread.id, run.id, "failed")
        else:
            store.update_thread_metadata(thread.id, {"n": str(done)})
            ack("meta", thread.id, str(done))
    ack("done")


if __name__ == "__main__":
    main()
