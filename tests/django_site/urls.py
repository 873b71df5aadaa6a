"""One view that sends a mail, for the tests that run the project under a threaded WSGI server."""

from django.core.mail import send_mail
from django.http import HttpRequest, HttpResponse
from django.urls import path


def send_view(request: HttpRequest, number: int) -> HttpResponse:
    sent = send_mail(f"web {number}", "Sent from a view.\n", None, ["visitor@example.com"])
    return HttpResponse(f"sent {sent}")


urlpatterns = [path("send/<int:number>", send_view)]
