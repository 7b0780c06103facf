"""gunicorn reads this file from its working directory (the project root, under `make run` and
the systemd unit alike), so the command line stays config.service.web_command's. It makes
gunicorn's own lines (start-up, workers, the access log) follow LOG_FORMAT (with json they are
JSON objects like every other line of the service), and turns gunicorn's control socket off."""
from config import env
from config.logging import LOG_FORMATS, gunicorn_logconfig

logconfig_dict = gunicorn_logconfig(env.choice("LOG_FORMAT", "plain", LOG_FORMATS))

# No control socket (gunicornc). Its default path is one per user ($XDG_RUNTIME_DIR/gunicorn.ctl,
# else ~/.gunicorn/gunicorn.ctl), so the last of two services on one machine to start would take
# it from the other; and nothing here uses it: the supervisor and systemd reload, stop and
# restart gunicorn with signals. (gunicorn before 25.1 has no such setting and ignores this line.)
control_socket_disable = True
