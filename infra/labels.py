"""The Ray node labels a ganops cluster writes (infra/aws/launcher.py) and its trials read
(trainers/cost.py, infra/aws/spot.py): what a node costs and on which market it runs."""

LABEL_PRICE = "ganops.io/usd-per-hour"
LABEL_ON_DEMAND = "ganops.io/on-demand-usd-per-hour"
LABEL_MARKET = "ganops.io/market"
