#!/usr/bin/env python3
"""A minimal Django project whose sessions live in cloakroomd.

    cargo run --release -p cloakroomd -- --bind tcp://127.0.0.1:7450
    pip install ./clients/python django
    cd clients/python/examples/django_project
    export CLOAKROOM_ENDPOINT=tcp://127.0.0.1:7450
    python manage.py migrate && python manage.py createsuperuser
    python manage.py runserver

then sign in at http://127.0.0.1:8000/login/ (or /admin/).
"""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
