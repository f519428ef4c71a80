#!/bin/sh
# fcgi-launch under spawn-fcgi, for nginx, which starts no FastCGI
# application itself.  Use this script as the run script of a supervisor
# (runit, daemontools, s6) or call it from an init script; run it as root.
#
# spawn-fcgi creates the socket, gives it to www-data (nginx's workers)
# with mode 0660, becomes the user the program runs as (-u, -g) and execs
# fcgi-launch with the listening socket on file descriptor 0; fcgi-launch
# sees that and serves FastCGI on it.  -n keeps spawn-fcgi in the
# foreground, so that what the supervisor watches is fcgi-launch itself;
# without -n (and with -P /run/fcgi-launch/app.pid) it goes to the
# background instead.  A program of its own can run as a user of its own
# (-u app -g app): the socket stays www-data's.
#
# nginx:
#
#     location /yourapplication {
#         include fastcgi_params;
#         fastcgi_pass unix:/run/fcgi-launch/app.sock;
#     }
#
# nginx sends the whole path as SCRIPT_NAME; --script-name makes it
# SCRIPT_NAME=/yourapplication and PATH_INFO the rest.  The program's
# stderr lands in nginx's error log; fcgi-launch's own messages on this
# script's stderr.  Options of fcgi-launch go before the second "--".
# The environment of this script reaches the program:
#
#     export APP_ENV=production

set -e
mkdir -p /run/fcgi-launch
exec spawn-fcgi -n \
    -s /run/fcgi-launch/app.sock -M 0660 -U www-data -G www-data \
    -u www-data -g www-data \
    -- /usr/bin/fcgi-launch --script-name /yourapplication \
    -- /var/www/yourapplication/app.cgi
