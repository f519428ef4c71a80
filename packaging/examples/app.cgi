#!/bin/sh
# The sample CGI application the example configurations serve. Plain sh,
# so it runs anywhere; any CGI program (Python, Perl, a compiled binary)
# is deployed the same way.
#
#   /any/path          a page showing where the web server says the app is
#                      mounted (SCRIPT_NAME, PATH_INFO) and the request
#   ?echo              answers with the request body, byte for byte
#   ?download=N        answers with N bytes of a fixed pattern
#   ?stderr=WORD       also writes "app.cgi stderr WORD" to stderr, which
#                      the web server puts in its error log
case "$QUERY_STRING" in
echo)
    printf 'Content-Type: application/octet-stream\r\n\r\n'
    exec head -c "${CONTENT_LENGTH:-0}"
    ;;
download=*)
    n=${QUERY_STRING#download=}
    printf 'Content-Type: application/octet-stream\r\nContent-Length: %s\r\n\r\n' "$n"
    yes 'fcgi-launch sample download pattern' | head -c "$n"
    exit 0
    ;;
stderr=*)
    echo "app.cgi stderr ${QUERY_STRING#stderr=}" >&2
    ;;
esac
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
echo "Hello from app.cgi"
echo "SCRIPT_NAME=$SCRIPT_NAME"
echo "PATH_INFO=$PATH_INFO"
echo "QUERY_STRING=$QUERY_STRING"
echo "REQUEST_METHOD=$REQUEST_METHOD"
