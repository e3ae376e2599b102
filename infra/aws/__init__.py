"""AWS behind a small typed interface: a cluster profile, the Ray cluster-launcher YAML it
generates, spot prices, and the security group the cluster runs in.

boto3 is imported lazily (`infra.aws.session.client`), so nothing here needs it until a call
reaches AWS: `ganops cluster config` works on a machine without boto3 or credentials.
"""
