#!/bin/sh
# A sample CGI application: shows where the web server says it is mounted,
# the query and the body. Any CGI program works the same way; this one is
# plain sh so it runs anywhere.
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
echo "Hello from app.cgi"
echo "SCRIPT_NAME=$SCRIPT_NAME"
echo "PATH_INFO=$PATH_INFO"
echo "QUERY_STRING=$QUERY_STRING"
echo "REQUEST_METHOD=$REQUEST_METHOD"
if [ -n "$CONTENT_LENGTH" ] && [ "$CONTENT_LENGTH" -gt 0 ]; then
    echo "body ($CONTENT_LENGTH bytes):"
    head -c "$CONTENT_LENGTH"
    echo
fi
echo "app.cgi served $REQUEST_METHOD $REQUEST_URI" >&2
