"""syncsmtp in a real Jupyter kernel (ipykernel, driven by nbclient): sends cell
after cell, a re-run cell, a progress bar, the rich display of results, and an
interrupted send (the kernel's stop button) that leaves the next send working.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from syncsmtp.testing import SMTPTestServer

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

PASSWORD = "kernel-secret-4711"


def setup_cell(server: SMTPTestServer) -> str:
    return (
        "import syncsmtp\n"
        "from email.message import EmailMessage\n"
        f"policy = syncsmtp.Policy(host={server.host!r}, port={server.port}, ca_file={server.ca_file!r},\n"
        f"                         username='user', password={PASSWORD!r})\n"
        "def message(subject):\n"
        "    msg = EmailMessage()\n"
        "    msg['From'], msg['To'], msg['Subject'] = 'nb@example.com', 'bob@example.com', subject\n"
        "    msg.set_content('from a notebook')\n"
        "    return msg\n"
    )


def outputs_of(cell: Any) -> str:
    """Everything a cell showed, as one string (text, HTML, errors)."""
    shown = []
    for output in cell.outputs:
        shown.append(output.get("text", ""))
        shown.extend(str(value) for value in output.get("data", {}).values())
        shown.extend([output.get("ename", ""), output.get("evalue", "")])
    return "\n".join(shown)


def test_a_notebook_sends_interrupts_and_sends_again(smtp_server_factory: Any) -> None:
    server = smtp_server_factory(users={"user": PASSWORD})
    cells = [
        setup_cell(server),
        "result = syncsmtp.send(message('first'), policy, timeout=20)\nresult",
        "mailer = syncsmtp.Mailer(policy, connections=2)\n"
        "report = mailer.send_many([message(f'bulk {i}') for i in range(5)], timeout=20, progress=True)\n"
        "report",
        "import time\nstarted = time.monotonic()\n"
        "try:\n"
        "    syncsmtp.send(message('stalled'), policy, timeout=60)\n"
        "finally:\n"
        "    print(f'interrupted after {time.monotonic() - started:.1f} s')\n",
        "after = syncsmtp.send(message('after the interrupt'), policy, timeout=20)\n"
        "mailer.send(message('mailer after the interrupt'), timeout=20)\n"
        "after.accepted",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    client = nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3", allow_errors=True)
    with client.setup_kernel():
        for index in range(3):
            client.execute_cell(notebook.cells[index], index)
        # Run the send cell again, as after editing it.
        client.execute_cell(notebook.cells[1], 1)
        assert [m.message["Subject"] for m in server.wait_for(7)][-1] == "first"

        server.stall("mail")
        # The stop button: what it sends to an ipykernel is SIGINT.
        stop = threading.Timer(1.5, client.km.provisioner.process.send_signal, (signal.SIGINT,))
        stop.start()
        started = time.monotonic()
        client.execute_cell(notebook.cells[3], 3)
        stop.join()
        assert time.monotonic() - started < 15
        server.clear_faults()
        client.execute_cell(notebook.cells[4], 4)

    first, bulk, stalled, after = (notebook.cells[i] for i in (1, 2, 3, 4))
    result_html = first.outputs[-1]["data"]["text/html"]
    assert "syncsmtp-result" in result_html and "bob@example.com" in result_html
    assert "250" in first.outputs[-1]["data"]["text/plain"]  # the readable text table
    assert "5 messages: 5 sent, 0 failed" in bulk.outputs[-1]["data"]["text/plain"]
    assert "syncsmtp-report" in bulk.outputs[-1]["data"]["text/html"]
    # tqdm.auto picks the notebook bar, a widget, when ipywidgets is there (extra "jupyter").
    assert any("application/vnd.jupyter.widget-view+json" in output.get("data", {})
               for output in bulk.outputs), "a notebook progress bar was shown"
    assert stalled.outputs[-1]["ename"] == "KeyboardInterrupt"
    assert "interrupted after" in outputs_of(stalled)
    assert after.outputs[-1]["data"]["text/plain"] == "('bob@example.com',)"
    subjects = [m.message["Subject"] for m in server.wait_for(9)]
    assert subjects[-2:] == ["after the interrupt", "mailer after the interrupt"]
    assert "stalled" not in subjects
    shown = "\n".join(outputs_of(cell) for cell in notebook.cells)
    assert PASSWORD not in shown
